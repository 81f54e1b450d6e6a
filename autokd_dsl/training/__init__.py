"""Training: the distilled student (:mod:`.student`), teachers (:mod:`.teacher`), the offline teacher-output
cache (:mod:`.teacher_cache`) and the optimiser recipe (:mod:`.optim`)."""
