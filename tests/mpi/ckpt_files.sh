#!/bin/bash
# ckpt_files.sh - checkpoint files: the documented HDF5 layout as h5py reads
# it; export and inspect; save_strategy, save_total_limit, save_only_model;
# SIGKILL at random moments, many of them during a save, never damages the
# checkpoint `latest` names; damaged or foreign checkpoints stop every rank
# with one clear message.
. "$(dirname "$0")/common.sh"
"$PYTHON3" -c "import h5py" 2>/dev/null || { echo "SKIP: python3-h5py is not installed"; exit 77; }
need_procps

sums_data "$WORK/pc" 11 21
ckpt_yaml "$WORK/base.yaml" 2 "per_device_train_batch_size: 4"

run() { train "$1" "$2" "$WORK/base.yaml" "${@:3}"; } # run NAME NP [--key value ...]

# ---- layout, read by h5py; export and inspect ----
run lay 2 --zero_stage 1
CK="$WORK/lay/checkpoint-12.h5"
py "$CK" "$WORK/lay/model.safetensors" <<'PY' || fail "the checkpoint layout is not the documented one"
import h5py, json, struct, sys
import numpy as np
ck, st = sys.argv[1], sys.argv[2]
def text(x):
    return x.decode() if isinstance(x, bytes) else str(x)
f = h5py.File(ck, "r")
assert text(f.attrs["format"]) == "trl-hpc checkpoint"
assert int(f.attrs["format_version"]) == 1
ts, sa = f["trainer_state"].attrs, f["sampler"].attrs
assert (int(ts["global_step"]), int(ts["world_size"]), int(ts["zero_stage"])) == (12, 2, 1)
assert int(sa["samples_seen"]) == 12 * 8 and int(sa["rows_per_step"]) == 8
assert int(f["optimizer"].attrs["step"]) == 12
assert f["rng"].shape == (2, 4) and f["rng"].dtype == np.uint64
assert (f["rng"][0] != f["rng"][1]).any()
assert "zero_stage: 1" in text(f["config"][()])
assert json.loads(text(f["model"].attrs["config_json"]))["hidden_size"] == 32
raw = open(st, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = {k: v for k, v in json.loads(raw[8:8 + n]).items() if k != "__metadata__"}
for g in ("model", "optimizer/exp_avg", "optimizer/exp_avg_sq"):
    assert sorted(f[g].keys()) == sorted(head), (g, sorted(f[g].keys()))
    for name, v in head.items():
        d = f[g][name]
        assert d.dtype == np.float32 and list(d.shape) == v["shape"], (g, name, d.shape)
        x = d[()]
        w = np.frombuffer(x.tobytes(), dtype=np.uint32).astype(np.uint64)
        s1 = int(w.sum()) % 2**64
        s2 = int((w * np.arange(1, w.size + 1, dtype=np.uint64)).sum()) % 2**64
        assert [s1, s2] == [int(c) for c in d.attrs["checksum"]], (g, name)
        if g == "model":  # the final export is the same step, in float32
            s, e = v["data_offsets"]
            assert x.tobytes() == raw[8 + n + s:8 + n + e], name
        if g.endswith("exp_avg_sq"):
            assert (x >= 0).all() and (x > 0).any(), name
print("  h5py: layout, shapes, checksums and weights as documented")
PY
"$TRL" inspect "$CK" >"$WORK/inspect.out" || fail "inspect failed"
grep -q "^global_step: 12 of 12" "$WORK/inspect.out" || fail "inspect: no step"
grep -q "written by: 2 ranks, zero_stage 1" "$WORK/inspect.out" || fail "inspect: no layout"
grep -Eq "^  model.norm.weight +\(32\)" "$WORK/inspect.out" || fail "inspect: no tensor list"
grep -q "^  learning_rate: 0.003" "$WORK/inspect.out" || fail "inspect: no config"
"$TRL" export "$CK" "$WORK/exp" >"$WORK/export.out" || fail "export failed"
cmp -s "$WORK/exp/model.safetensors" "$WORK/lay/model.safetensors" ||
    fail "export of the last checkpoint differs from the run's own final model"
cmp -s "$WORK/exp/config.json" "$WORK/lay/config.json" || fail "export: config.json differs"
"$TRL" export "$WORK/lay/checkpoint-6.h5" "$WORK/exp6" --save_dtype bfloat16 >/dev/null ||
    fail "bfloat16 export failed"
rc=0
$MPIRUN -np 2 "$TRL" inspect "$CK" >"$WORK/inspect2.out" 2>&1 || rc=$?
[ $rc -eq 2 ] && grep -q "runs on one process" "$WORK/inspect2.out" ||
    fail "inspect under mpirun -np 2: status $rc"
echo "ok: h5py reads the documented layout; export and inspect"

# ---- save_strategy, save_total_limit, save_only_model ----
run lim 2 --save_steps 2 --save_total_limit 2
[ "$(cd "$WORK/lim" && echo checkpoint-*.h5)" = "checkpoint-10.h5 checkpoint-12.h5" ] ||
    fail "save_total_limit 2 kept: $(ls "$WORK/lim")"
# A fresh run into the same folder: its first save repoints latest and,
# under a limit, removes the earlier run's later checkpoints.
run lim 2 --save_steps 4 --max_steps 8 --save_total_limit 2
grep -q "holds checkpoints of an earlier run" "$WORK/lim.out" || fail "no note about the earlier run"
[ "$(cd "$WORK/lim" && echo checkpoint-*.h5)" = "checkpoint-4.h5 checkpoint-8.h5" ] ||
    fail "a second run under save_total_limit 2 kept: $(ls "$WORK/lim")"
run ep 2 --max_steps -1 --num_train_epochs 2 --save_strategy epoch
[ "$(cd "$WORK/ep" && ls checkpoint-*.h5 | sort -V | xargs)" = "checkpoint-30.h5 checkpoint-60.h5" ] ||
    fail "save_strategy epoch (30 steps per epoch) wrote: $(ls "$WORK/ep")"
run none 2 --save_strategy no
[ -z "$(cd "$WORK/none" && ls | grep -E 'h5|latest')" ] || fail "save_strategy no wrote checkpoints"
run mo 2 --save_only_model true
py "$WORK/mo/checkpoint-12.h5" <<'PY' || fail "save_only_model: optimizer state was written"
import h5py, sys
f = h5py.File(sys.argv[1], "r")
assert "optimizer" not in f and "model" in f and int(f["trainer_state"].attrs["save_only_model"]) == 1
PY
[ "$(stat -c %s "$WORK/mo/checkpoint-12.h5")" -lt "$(($(stat -c %s "$CK") / 2))" ] ||
    fail "save_only_model: the file is not smaller"
echo "ok: save_strategy steps/epoch/no, save_total_limit, save_only_model"

# Stage 3 with units of 16 floats or fewer (hidden_size 16, nothing kept
# whole): one rank's piece is the whole unit, the others' are empty; loading
# must still make the same collective calls on every rank.
run tiny16 2 --zero_stage 3 --stage3_param_persistence_threshold 0 --model.hidden_size 16 \
    --model.intermediate_size 32 --max_steps 2
run tiny16 2 --zero_stage 3 --stage3_param_persistence_threshold 0 --model.hidden_size 16 \
    --model.intermediate_size 32 --max_steps 4 --resume_from_checkpoint latest
[ "$(cat "$WORK/tiny16/latest")" = checkpoint-4.h5 ] || fail "stage 3 with 16-float units did not resume"
echo "ok: stage 3 resumes with units smaller than one piece"

# ---- damaged and foreign checkpoints: every rank stops, one message ----
refuse() { # refuse WHAT EXPECTED [--key value ...]: resuming must fail with EXPECTED
    local what=$1 expected=$2 rc=0
    shift 2
    rm -rf "$WORK/bad"
    run_limited 60 $MPIRUN -np 2 "$TRL" "$WORK/base.yaml" --output_dir "$WORK/bad" "$@" \
        >"$WORK/bad.out" 2>&1 || rc=$?
    [ $rc -eq 1 ] || { cat "$WORK/bad.out"; fail "$what: exit status $rc, not 1"; }
    [ "$(grep -c 'trl-hpc: error' "$WORK/bad.out")" = 1 ] || fail "$what: not one message"
    grep -q -- "$expected" "$WORK/bad.out" || { cat "$WORK/bad.out"; fail "$what: no '$expected'"; }
    echo "  $what: $(grep 'trl-hpc: error' "$WORK/bad.out" | cut -c1-150)"
}
C6="$WORK/lay/checkpoint-6.h5"
head -c $(($(stat -c %s "$C6") / 2)) "$C6" >"$WORK/trunc.h5"
refuse truncated "truncated file" --resume_from_checkpoint "$WORK/trunc.h5"
echo "not a checkpoint" >"$WORK/text.h5"
refuse "not HDF5" "cannot open checkpoint" --resume_from_checkpoint "$WORK/text.h5"
# Bytes flipped inside one tensor's object header, then inside its data.
py "$C6" "$WORK" <<'PY'
import h5py, shutil, sys
src, work = sys.argv[1], sys.argv[2]
with h5py.File(src, "r") as f:
    d = f["model/model.layers.1.mlp.up_proj.weight"]
    header, data = h5py.h5o.get_info(d.id).addr, d.id.get_offset()
for name, at in (("header", header + 24), ("data", data + 1001)):
    shutil.copy(src, f"{work}/{name}.h5")
    with open(f"{work}/{name}.h5", "r+b") as g:
        g.seek(at)
        b = g.read(4)
        g.seek(at)
        g.write(bytes(x ^ 0x5A for x in b))
shutil.copy(src, f"{work}/shape.h5")
with h5py.File(f"{work}/shape.h5", "r+") as g:
    old = g["model/model.norm.weight"]
    attrs = dict(old.attrs)
    del g["model/model.norm.weight"]
    new = g["model"].create_dataset("model.norm.weight", shape=(16,), dtype="f4")
    for k, v in attrs.items():
        new.attrs[k] = v
shutil.copy(src, f"{work}/version.h5")
with h5py.File(f"{work}/version.h5", "r+") as g:
    g.attrs["format_version"] = 99
PY
refuse "flipped header bytes" "model.layers.1.mlp.up_proj.weight: incorrect metadata checksum" \
    --resume_from_checkpoint "$WORK/header.h5"
refuse "flipped data bytes" "model.layers.1.mlp.up_proj.weight does not match its checksum" \
    --resume_from_checkpoint "$WORK/data.h5"
refuse "wrong shape" "model.norm.weight has shape (16), the model needs (32)" \
    --resume_from_checkpoint "$WORK/shape.h5"
refuse "format version" "format version 99" --resume_from_checkpoint "$WORK/version.h5"
refuse "another model" "holds another model: hidden_size is 32 there and 64" \
    --resume_from_checkpoint "$C6" --model.hidden_size 64
refuse "model only" "save_only_model" --resume_from_checkpoint "$WORK/mo/checkpoint-12.h5"
refuse "no checkpoint yet" "has no checkpoint" --resume_from_checkpoint latest
"$TRL" inspect "$WORK/data.h5" >/dev/null 2>&1 && fail "inspect passed a damaged tensor"
echo "ok: damaged, foreign and missing checkpoints are refused on every rank"

# ---- SIGKILL at random moments: `latest` always loads ----
# 2.7 M parameters (33 MB per checkpoint) saved after every short step, so
# most of the time goes to saves and many kills land inside one.
sed -e 's/hidden_size: 32/hidden_size: 256/' -e 's/intermediate_size: 64/intermediate_size: 512/' \
    -e 's/num_hidden_layers: 2/num_hidden_layers: 4/' "$WORK/base.yaml" >"$WORK/kill.yaml"
mid=0
for i in $(seq 12); do
    resume=()
    [ -f "$WORK/kill/latest" ] && resume=(--resume_from_checkpoint latest)
    $MPIRUN -np 2 "$TRL" "$WORK/kill.yaml" --output_dir "$WORK/kill" --zero_stage 3 \
        --max_steps 100000 --save_steps 1 --save_total_limit 2 --per_device_train_batch_size 1 \
        --eval_max_samples 1 "${resume[@]}" >"$WORK/kill.out" 2>&1 &
    pid=$!
    sleep "$(py <<<"import random; print(round(random.uniform(0.6, 2.0), 2))")"
    pkill -9 -f "^$TRL $WORK/kill.yaml" || true
    wait $pid 2>/dev/null || true
    ls "$WORK"/kill/*.h5.tmp >/dev/null 2>&1 && mid=$((mid + 1))
    [ "$(ls "$WORK"/kill/checkpoint-*.h5 2>/dev/null | wc -l)" -le 3 ] ||
        fail "kill $i: more checkpoints than save_total_limit allows: $(ls "$WORK/kill")"
    if [ -f "$WORK/kill/latest" ]; then
        "$TRL" inspect "$WORK/kill/$(cat "$WORK/kill/latest")" >"$WORK/kinspect.out" 2>&1 ||
            { cat "$WORK/kinspect.out"; fail "kill $i: the checkpoint latest names does not load"; }
    fi
    [ $i -ge 6 ] && [ $mid -ge 3 ] && break
done
[ $mid -ge 1 ] || fail "no kill landed inside a save in $i tries: the test did not test"
k=$(sed -n 's/^checkpoint-\([0-9]*\)\.h5$/\1/p' "$WORK/kill/latest")
[ -n "$k" ] || fail "no checkpoint after $i runs"
run_limited 120 $MPIRUN -np 3 "$TRL" "$WORK/kill.yaml" --output_dir "$WORK/kill" --zero_stage 1 \
    --max_steps $((k + 2)) --save_steps 1 --save_total_limit 2 --per_device_train_batch_size 1 \
    --eval_max_samples 1 --resume_from_checkpoint latest >"$WORK/kill.out" 2>&1 ||
    { cat "$WORK/kill.out"; fail "resuming after the kills failed"; }
grep -q "resumed from $WORK/kill/checkpoint-$k.h5: step $k" "$WORK/kill.out" || fail "not resumed from $k"
[ "$(cat "$WORK/kill/latest")" = "checkpoint-$((k + 2)).h5" ] || fail "the resumed run did not save"
ls "$WORK"/kill/*.tmp >/dev/null 2>&1 && fail "partial files were left behind"
echo "ok: $i runs SIGKILLed ($mid inside a save): latest always loaded; resumed from step $k"
