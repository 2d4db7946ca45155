"""HTTP front door: the FastAPI app factory, auth, problem responses, /metrics and routes."""
