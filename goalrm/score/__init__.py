"""`goalrm score`: score and filter generated completions offline. Only run.py touches Ray."""
