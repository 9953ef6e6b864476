# One line per neck module.
