"""Built-in engineering contract (``engineering.yaml``) and the JSON Schema every contract file must satisfy."""
