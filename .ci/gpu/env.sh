# Sourced by .ci/gpu/check and .ci/gpu/runs on the device machine, from the
# repository root: Keras from the wheels that .ci/gpu/prepare put into .gpu/
# (where Python cannot import it yet), JAX as the backend (the image has no
# TensorFlow), the data from the mirror copied beside them, and $OUT.
export PYTHONUNBUFFERED=1 KERAS_BACKEND=${KERAS_BACKEND:-jax}
if [ -d .gpu/whl ] && ! python3 -c "import keras" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .gpu/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
export UNET_KERAS_DATA_URL=${UNET_KERAS_DATA_URL:-file://$PWD/.gpu/isbi2012/}
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
