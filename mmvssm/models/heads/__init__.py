# One line per head module (mmpretrain classification heads).
