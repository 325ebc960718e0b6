"""What the car keeps and for how long: the audit trail, the read log and retention."""
