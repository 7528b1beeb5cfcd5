#!/usr/bin/env bash
# Second device call: wheels, GPU tests + FP8 loss side by side (no timing), then the timed rows one at a time.
set -u
export PYTHONUNBUFFERED=1
T0=$(date +%s)
el() { echo "[+$(( $(date +%s) - T0 )) s] $*"; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/b/*.whl 2>&1 | tail -2
cp -a /tmp/cu13x/. /tmp/site/ 2>/dev/null || echo "no cu13 libs from call 1"
export PYTHONPATH=/tmp/site
el installed
python3 -c "from flash_attn import cute; import torchao, diffusers, hydra; print('fa4 ok', torchao.__version__, diffusers.__version__)" 2>&1 | tail -1
mkdir -p /tmp/res
# --- untimed, side by side: FP8 loss (3 train.py runs, 500 steps) and the GPU tests
( timeout 200 python3 bench/train_runs.py fp8 --preset B --frames 8 --size-px 32 --batch-size 4 --steps 500 --workers 2 \
    --data /tmp/ms32 --out /tmp/fp8runs > $OUT/fp8_loss.jsonl 2> $OUT/fp8_loss.err ) &
FP8PID=$!
timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_attention.py tests/test_dit.py tests/test_fp8.py tests/test_fused.py > $OUT/pytest_gpu.txt 2>&1
tail -3 $OUT/pytest_gpu.txt
wait $FP8PID; cat $OUT/fp8_loss.jsonl; tail -2 $OUT/fp8_loss.err
cp /tmp/fp8runs/fp8_curves.json $OUT/ 2>/dev/null; for r in bf16 tensorwise rowwise; do tail -3 /tmp/fp8runs/fp8_$r.log; done
el "fp8 loss + tests done"
# --- timed, one at a time
peer=none; grep -q '"model": "wan", "error"' /tmp/res/backends_eager.jsonl 2>/dev/null && peer=wan
[ -s /tmp/res/backends_eager.jsonl ] || peer=wan
timeout 130 python3 bench/backends.py --grids 16,32,32 32,32,32 --modes eager --backends fa4 --peer $peer --timeout 60 | tee $OUT/backends_fa4.jsonl
el "fa4 eager done"
BEST=$(cat /tmp/res/backends_eager.jsonl $OUT/backends_fa4.jsonl 2>/dev/null | python3 -c "
import sys, json
rows = [json.loads(l) for l in sys.stdin if l.startswith('{')]
ok = [r for r in rows if r.get('model') == 'ours_cross' and r.get('tokens') == 16384 and 'step_s' in r]
print(min(ok, key=lambda r: r['step_s'])['backend'] if ok else 'sdpa')")
el "best eager backend at 16k: $BEST"
timeout 170 python3 bench/backends.py --grids 16,32,32 --modes compiled --backends $BEST --peer wan --timeout 160 | tee $OUT/backends_compiled_16k.jsonl
el "compiled 16k done"
timeout 150 python3 bench/train_runs.py mfu --preset XL128 --frames 16 --size-px 64 --compile --backend $BEST --steps 50 --workers 6 \
    --no-bench-row --data /tmp/ms64 --out /dev/shm/mfu 2>&1 | tee $OUT/train_mfu.jsonl
cp /dev/shm/mfu/mfu/metrics.csv $OUT/train_mfu_metrics.csv 2>/dev/null
el "train.py mfu done"
timeout 150 python3 bench/backends.py --grids 32,32,32 --modes compiled --backends $BEST --peer wan --timeout 140 | tee $OUT/backends_compiled_32k.jsonl
el "compiled 32k done"
timeout 100 python3 bench/dit_step.py --preset XL128 --grid 16 32 32 --batch-size 1 --models ours_cross --compile --fp8 tensorwise \
    --attention-backend $BEST | tee $OUT/fp8_speed.jsonl
el "all done"
