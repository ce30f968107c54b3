#!/usr/bin/env bash
# Pack /tmp/job/out into $OUT/results.tgz without trajectories and checkpoints (they stay on the machine).
tar czf $OUT/results.tgz --exclude='*.h5' --exclude='*.npz' -C /tmp/job out log.txt
ls -la $OUT
