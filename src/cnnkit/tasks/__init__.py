"""What a task decides: targets, head, loss, metrics, answers (:mod:`cnnkit.tasks.base`)."""
