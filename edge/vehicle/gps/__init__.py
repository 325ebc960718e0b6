"""Where the car is: fixes from a live GPS receiver, or from a recorded track for replay."""
