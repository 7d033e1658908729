# classifier variants for the localisation protocol, judged on train[80%:] (never val)
set -u
cd /work/main
D=../shared/data/critters-voc; P=$HOME/.cache/verydeep/loc-cls-probe; S=$HOME/.cache/verydeep/study-imagewoof
probe() {  # name source scale lr
  name=$1; src=$2; scale=$3; lr=$4
  shape=$(python3 -c "import json,sys,struct; f=open(sys.argv[1],'rb'); h=json.loads(f.read(struct.unpack('<Q',f.read(8))[0])); m=json.loads(h['__metadata__']['verydeep'])['model']; print(' '.join(f'--set model.{k}={m[k]}' for k in ('arch','width_mult','fc_width','crop_size')))" $S/$src/checkpoints/best.safetensors)
  if [ ! -f $P/$name/checkpoints/best.safetensors ]; then
  /usr/bin/time -f "%U+%S s CPU: train $name" .venv/bin/verydeep train --no-progress --set data.dataset=voc --set data.root=$D \
    --set "data.train_split=train[:80%]" --set "data.test_split=train[80%:]" $shape --set train.init_from=$S/$src/checkpoints/best.safetensors \
    --set optim.lr=$lr --set "data.scale=$scale" --set optim.batch_size=32 --set data.val_fraction=0 --set optim.patience=5 \
    --set optim.max_reductions=2 --set train.epochs=90 --set data.workers=0 --set train.out_dir=$P/$name > $P/$name.log 2>&1
  fi
  .venv/bin/verydeep eval $P/$name/checkpoints/best.safetensors --data $D --split "train[80%:]" --method centre,dense --scales 256,384 --workers 0 --json > $P/$name-heldout.json 2>/dev/null
  echo "$name $(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print([(r['method'], r['top1_err']) for r in d['rows']])" $P/$name-heldout.json)"
}
probe d256-384 D-256 [384] 0.001
probe d256-jit D-256 [256,512] 0.001
probe cjit-jit C-jit [256,512] 0.001
probe djit-jit D-jit [256,512] 0.001
probe b256-384 B-256 [384] 0.001
probe d256-384-lr1e-2 D-256 [384] 0.01
