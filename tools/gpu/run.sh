#!/usr/bin/env bash
# On the GPU machine: the chapters' record runs (tools/gpu/cut.py), one process per seed (KDLITE_SEEDS), at most
# $MAX_JOBS at once, longest first; then each record merged over its seeds (tools/merge_records.py). Everything comes
# back in $OUT/bundle.tgz (rewritten every 15 s, so a run cut short still returns what it finished), with summary.txt.
# Here: bash ../shared/gpu/prepare.sh && .venv/bin/python tools/gpu/cut.py
# There (carry .gpu and .whl): RUNS="rec09" bash tools/gpu/run.sh (chapter 9 is the one still owed; rec07ch, rec04
# and rec05's CIFAR-10 channel pruning are recorded, on the CPU, and re-record when named; so is chapter 3, whose
# rec03 needs SEEDS="0,1,2", one process, so that one teacher and one validation sweep choose T and alpha)
# One process per seed trains its own teacher where a chapter trains one (chapters 4, 7's chain, 9): the merged
# record's note says so. SEEDS="0,1,2" runs all seeds in one process (one teacher), as the chapter does.
set -u
cd "$(dirname "$0")/../.." || exit 1
OUT=${OUT:-/tmp/gpu-out}; W=/tmp/w; mkdir -p "$OUT" $W/res $W/log $W/fig
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl &&
  export PYTHONPATH=/tmp/site
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} KDLITE_SCALE=${KDLITE_SCALE:-gpu} KDLITE_OFFLINE=1
export KDLITE_DATA=/tmp/kdlite-data MPLBACKEND=Agg PYTHONUNBUFFERED=1 KDLITE_FIGURES=$W/fig OMP_NUM_THREADS=2
bundle() { tar -czf "$OUT/bundle.part" -C $W res log fig 2>/dev/null; mv "$OUT/bundle.part" "$OUT/bundle.tgz"; }
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'; } > $W/log/env.txt 2>&1
SECONDS=0
(python3 .gpu/data/unpack.py mnist /tmp/mnist.npz && python3 -m kdlite.data import mnist /tmp/mnist.npz) &
(python3 .gpu/data/unpack.py cifar10 /tmp/cifar10.npz &&
  python3 -m kdlite.data import cifar10 /tmp/cifar10.npz --note "JPEG copy") &
wait
echo "imports ${SECONDS}s" >> $W/log/summary.txt
nvidia-smi dmon -s u -d 15 > $W/log/dmon.txt 2>&1 &
pids=()
for run in ${RUNS:-rec09}; do
  for seed in ${SEEDS:-0 1 2}; do
    while [ "$(jobs -rp | grep -cxF -f <(printf '%s\n' "${pids[@]}"))" -ge "${MAX_JOBS:-8}" ]; do sleep 2; bundle; done
    ( cd notebooks && S0=$SECONDS && KDLITE_SEEDS=$seed KDLITE_RESULTS=$W/res/${run}_s$seed timeout "${LIMIT:-540}" \
        python3 -c "import builtins, runpy; builtins.display = print; runpy.run_path('../.gpu/$run.py', run_name='__main__')" \
        > $W/log/${run}_s$seed.log 2>&1
      echo "${run} seed $seed rc=$? $((SECONDS - S0))s (started at ${S0}s)" >> $W/log/summary.txt ) &
    pids+=($!)
  done
done
while [ "$(jobs -rp | grep -cxF -f <(printf '%s\n' "${pids[@]}"))" -gt 0 ]; do sleep 15; bundle; done
mkdir -p $W/res/merged
for name in $(ls $W/res/*/ | grep '\.json$' | sort -u); do
  python3 tools/merge_records.py $W/res/merged/$name $W/res/*_s*/$name >> $W/log/summary.txt 2>&1
done
bundle; cp $W/log/summary.txt "$OUT/summary.txt"; cat $W/log/summary.txt $W/log/env.txt
