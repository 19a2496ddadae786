//! VM tests of the actor runtime end to end (the actor runtime issue fills this in).
