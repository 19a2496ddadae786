//! VM tests of the sched_ext scheduler (the scheduler issue fills this in).
