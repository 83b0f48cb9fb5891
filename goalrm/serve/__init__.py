"""`goalrm serve`: rewards and token Q-values over HTTP on Ray Serve. Only app.py and run.py touch Ray."""
