#!/usr/bin/env bash
# The GPU run, prepared: on a machine with a GPU, in under 8 minutes (the steps' time limits add up to 475 s),
#   1. the extraction benchmark (bench.extract_throughput) in fp32 and bf16 at batch 64 for SeLaVi, C3D + VGGish and
#      the torchvision r2plus1d_18 plugin, and SeLaVi's batch sweep (32, 128) in bf16;
#   2. DAAN's and AVCA's training step (bench.daan_step), fp32 and bf16;
#   3. every model's UCF epoch (bench.train_throughput, 20 timed batches) and the whole UCF benchmark's estimated time
#      (bench.gpu_estimate).
# The synthetic UCF-size training data is made once, in OUT/ucf_data. Figures go to OUT (default bench/results/gpu):
# extract_*.json (each with its Markdown table under "report"),
# daan_step_*.json, train.jsonl, ucf_estimate.{json,md}, and summary.md, which collects them for bench/RESULTS.md.
# Every step has its own time limit; a step that fails or runs out of time is named in summary.md and the rest go on.
#
#   bench/gpu_check.sh [OUT]          # on the GPU machine, from the repository root
#   bench/gpu_check.sh --dry [OUT]    # CPU, tiny sizes: every step runs end to end in seconds (tests/test_gpu_check.py)
set -uo pipefail

dry=0
if [[ "${1:-}" == "--dry" ]]; then dry=1; shift; fi
out=${1:-bench/results/gpu}
py=${PYTHON:-python}
mkdir -p "$out"
: > "$out/summary.md"
start=$SECONDS
cores=$(nproc)

if (( dry )); then
    dev=cpu
    ext=(--sets handcrafted --clips c07 --reps 1 --threads 1)
    batches=(2); sweep=(); limit=60
    step=(--batch-size 32 --repeats 1 --data-scale 0.02); train=(--models avca --batches 2 --batch-size 32 --data-scale 0.02)
else
    dev=cuda
    ext=(--sets selavi,c3d_vggish,r2plus1d --repeat 4 --reps 3 --threads "$cores")
    batches=(64); sweep=(32 128); limit=110
    step=(); train=(--models all --batches 20 --batch-size 0)
    nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" > "$out/nvidia-smi.txt"
fi

run() {  # run NAME SECONDS COMMAND...: the command's stdout to OUT/NAME.log; its status into summary.md
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    local state="ok"
    (( rc == 124 )) && state="ran out of its ${limit} s"
    (( rc != 0 && rc != 124 )) && state="failed (exit $rc; see $name.log)"
    echo "- $name: $state, $((SECONDS - t0)) s" >> "$out/summary.md"
}

for prec in fp32 bf16; do
    for b in "${batches[@]}"; do
        run "extract_${prec}_b$b" "$limit" $py -m bench.extract_throughput --device $dev --precision $prec \
            --batch-windows "$b" "${ext[@]}" --json "$out/extract_${prec}_b$b.json"
    done
done
for b in "${sweep[@]}"; do
    run "extract_bf16_b${b}_selavi" 40 $py -m bench.extract_throughput --device $dev --precision bf16 \
        --batch-windows "$b" --sets selavi --repeat 4 --reps 2 --threads "$cores" \
        --json "$out/extract_bf16_b${b}_selavi.json"
done
for prec in fp32 bf16; do
    run "daan_step_$prec" 40 $py -m bench.daan_step --device $dev --precision $prec --data "$out/ucf_data" "${step[@]}"
    grep '^{' "$out/daan_step_$prec.log" > "$out/daan_step_$prec.json"
done
run train 80 $py -m bench.train_throughput --device $dev --data "$out/ucf_data" "${train[@]}"
grep '^{' "$out/train.log" > "$out/train.jsonl"
run ucf_estimate 15 $py -m bench.gpu_estimate "$out"

{
    echo
    echo "Total: $((SECONDS - start)) s on $(uname -m), $cores cores, device $dev$( ((dry)) && echo ' (dry run)')."
    for f in "$out"/extract_*.json; do
        [[ -f $f ]] || continue
        echo
        echo "### $(basename "$f")"
        echo
        $py -c 'import json, sys; print(json.load(open(sys.argv[1]))["report"])' "$f"
    done
    for f in "$out"/daan_step_*.json; do
        [[ -s $f ]] && { echo; echo "$(basename "$f"): $(cat "$f")"; }
    done
    [[ -f $out/ucf_estimate.md ]] && { echo; cat "$out/ucf_estimate.md"; }
} >> "$out/summary.md"
cat "$out/summary.md"
! grep -q "failed\|ran out" "$out/summary.md"
