"""Following plates from frame to frame and deciding what each one reads."""
