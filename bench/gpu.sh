#!/usr/bin/env bash
# Every GPU figure in docs/BENCHMARKS.md, in the order they appear there: one script so a lent GPU's few minutes
# go to measuring, not typing. Usage: bash bench/gpu.sh OUT_DIR [kernels|gputests|steps|xformers|tokens|compile|heads128|backends|fp8|trainpy|bf16w|single|suite]...
# JSON rows go to OUT_DIR/*.jsonl; each part has its own time limit so one slow part cannot eat the rest.
# The peers need diffusers (pip install -e '.[dev]'); the xformers part needs an xformers built for this torch;
# fp8 needs torchao ('.[fp8]'), fa4 rows flash-attn-4 ('.[fa4]'). Wheels installed with --target into a PYTHONPATH
# folder: add its nvidia_cutlass_dsl/dsl_packages too (FA4's CuTe DSL registers that path in a .pth file, and
# Python reads .pth files only from site-packages).
set -u
out=${1:?usage: bash bench/gpu.sh OUT_DIR [part ...]}
shift
mkdir -p "$out"
parts=${*:-kernels steps tokens compile}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/device.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$out/device.txt"

for part in $parts; do
  echo "=== $part"
  case $part in
    kernels)  # attention kernels at the XL preset's heads (16 x 72)
      timeout 120 python3 bench/attention.py | tee "$out/attention.jsonl" ;;
    steps)  # XL at 16k and 32k tokens, every row, eager (16k with a per-kernel profile of each row)
      timeout 240 python3 bench/dit_step.py --preset XL --grid 16 32 32 --batch-size 1 --profile-out "$out" \
        | tee "$out/xl_16k.jsonl"
      timeout 200 python3 bench/dit_step.py --preset XL --grid 32 32 32 --batch-size 1 | tee "$out/xl_32k.jsonl" ;;
    xformers)  # ours with xformers kernels (needs an xformers build that matches the GPU's torch)
      timeout 100 python3 bench/dit_step.py --preset XL --grid 16 32 32 --batch-size 1 --models ours_cross,ours_joint \
        --attention-backend xformers | tee "$out/xl_16k_xformers.jsonl" ;;
    tokens)  # the largest trainable token count: every block checkpointed, one clip
      for grid in "32 64 64" "48 64 64"; do
        timeout 150 python3 bench/dit_step.py --preset XL --grid $grid --batch-size 1 --checkpoint-fraction 1 \
          --models ours_cross,wan --steps 1 --warmup 1 | tee -a "$out/xl_tokens.jsonl"
      done ;;
    compile)  # regional torch.compile of every row's blocks
      timeout 240 python3 bench/dit_step.py --preset XL --grid 16 32 32 --batch-size 1 --compile \
        --models ours_cross,wan,ours_joint,cogvideox | tee "$out/xl_16k_compile.jsonl" ;;
    heads128)  # XL's width as 9 heads of 128 instead of 16 of 72: the kernels, then every row at 16k tokens
      timeout 90 python3 bench/attention.py --heads 9 --head-dim 128 --backends sdpa,sdpa_flash,sdpa_cudnn,flex \
        | tee "$out/attention_9x128.jsonl"
      timeout 240 python3 bench/dit_step.py --preset XL --heads 9 --grid 16 32 32 --batch-size 1 \
        | tee "$out/xl_9x128_16k.jsonl" ;;
    backends)  # XL128 (9 heads of 128) at 16k and 32k tokens: each attention backend, eager and compiled, and Wan
      timeout 590 python3 bench/backends.py --timeout 150 --profile-out "$out" | tee "$out/xl128_backends.jsonl" ;;
    fp8)  # FP8 linears: speed at XL128 16k tokens compiled (bf16's row is the backends part's), then the loss of
          # 500 train.py steps against bf16, side by side (dit=B, 8 frames of 32x32, 4 clips)
      for recipe in tensorwise rowwise; do
        timeout 150 python3 bench/dit_step.py --preset XL128 --grid 16 32 32 --batch-size 1 --models ours_cross --compile \
          --fp8 $recipe | tee -a "$out/xl128_fp8.jsonl"
      done
      timeout 300 python3 bench/train_runs.py fp8 --preset B --frames 8 --size-px 32 --batch-size 4 --steps 500 \
        --out "$out/fp8_runs" | tee "$out/fp8_loss.jsonl" ;;
    trainpy)  # the Throughput callback's MFU in a real train.py run against dit_step.py's row, XL128 16k compiled,
              # then a profile of 5 steps of it (the device's busy share says whether the gap is host-side)
      timeout 400 python3 bench/train_runs.py mfu --preset XL128 --frames 16 --size-px 64 --compile --steps 60 \
        --profile-steps 5 --out "$out/train_runs" | tee "$out/train_mfu.jsonl" ;;
    single)  # dit.modulation=single (adaLN-single: 611M parameters, Wan's 607M) against Wan at 16k and 32k tokens,
             # eager and compiled: the speed and peak-memory goals at equal parameters
      timeout 590 python3 bench/backends.py --backends sdpa --modulation single --timeout 150 | tee "$out/xl128_single.jsonl" ;;
    bf16w)  # train.param_dtype=bf16 (bf16 block weights, fp32 masters): the bench row, then train.py, XL128 16k compiled
      timeout 150 python3 bench/dit_step.py --preset XL128 --grid 16 32 32 --batch-size 1 --models ours_cross --compile \
        --bf16-weights | tee "$out/xl128_bf16w.jsonl"
      timeout 400 python3 bench/train_runs.py mfu --preset XL128 --frames 16 --size-px 64 --compile --steps 60 \
        --no-bench-row --out "$out/train_runs_bf16w" train.param_dtype=bf16 | tee "$out/train_mfu_bf16w.jsonl" ;;
    gputests)  # the GPU-marked tests
      timeout 150 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_attention.py tests/test_dit.py tests/test_fp8.py \
        tests/test_block_ops.py 2>&1 \
        | tee "$out/pytest_gpu.txt" ;;
    suite)  # the whole default suite with CUDA visible (Lightning picks the GPU in every train.py it runs)
      timeout 400 python3 -m pytest -q -p no:cacheprovider tests 2>&1 | tee "$out/pytest_all.txt" ;;
    *) echo "unknown part $part" ;;
  esac
done
