"""`setu verify --url URL`: named checks against a running deployment, over HTTP only."""
