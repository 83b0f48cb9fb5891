"""Ray Train edge of goalrm; the core (model, losses, data) imports no Ray."""
