"""What a task decides: its metrics and how outputs become answers."""
