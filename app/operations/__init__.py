"""Running the service: metrics, access logs, request ids and body limits."""
