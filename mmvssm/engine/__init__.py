# Optimizer constructors and hooks.
