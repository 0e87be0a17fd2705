"""Who may call what: invoker IAM, ID tokens, ingress, and the identity of instances."""
