"""What every stage stands on: user errors, stop signals, several processes, atomic writes."""
