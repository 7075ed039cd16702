"""Run control: one live run per folder, stopping on signals, resuming, several processes and the thread policy."""
