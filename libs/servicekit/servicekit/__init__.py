"""Runtime pieces every service shares, written once."""
