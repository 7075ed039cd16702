"""The command-line programs (``train``, ``evaluate``, ``predict``, ``compare``, ``download``) and their shared argument handling."""
