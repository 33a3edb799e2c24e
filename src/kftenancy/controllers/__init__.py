"""The tenant controller: kopf watches feed a work queue; workers reconcile one tenant at a
time per name, level-based (any reconcile can run again at any time and converge)."""
