"""The processes binding: framing, TCP peers, timers and process control."""
