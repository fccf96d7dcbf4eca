#!/usr/bin/env sh
# Build the wheels bench/gpu_run.sh installs on a GPU machine that has Python 3.12 and its own
# torch but no fastai: `make gpu-wheels` (or `sh bench/gpu_wheels.sh [DIR]`), into bench/wheels/.
# Versions come from constraints.txt. Downloaded with --no-deps for CPython 3.12 on x86-64 Linux:
# fastai and its pure-Python dependencies (fastcore, fastprogress, fasttransform, plum-dispatch, ...)
# and Curate's own that a torch image lacks (GPU_WHEELS_BINARY: the compiled ones).
# The train job that section (e) runs also needs the app's web-side packages (fastapi, alembic,
# psycopg). Compiled packages the machine may lack too (pandas, pyarrow, scikit-learn,
# matplotlib, torchvision ...) can be added to GPU_WHEELS_BINARY; keep the folder small enough
# to carry (under ~50 MB: pyarrow alone is about 40 MB).
set -eu
cd "$(dirname "$0")/.."
DIR=${1:-bench/wheels}
PY=${PYTHON:-.venv/bin/python}
PURE="fastai fastcore fasttransform fastprogress fastdownload plum-dispatch beartype rich markdown-it-py mdurl
pygments python-fasthtml starlette anyio sniffio idna itsdangerous python-multipart cloudpickle annotated-types
pydantic pydantic-settings typing-inspection typing-extensions python-dotenv packaging requests urllib3 certifi
charset-normalizer python-dateutil six fastapi annotated-doc alembic mako psycopg dill joblib threadpoolctl"
BINARY=${GPU_WHEELS_BINARY:-"pydantic-core sqlalchemy greenlet pyyaml markupsafe psycopg-binary"}
mkdir -p "$DIR"
pinned() {  # name==version from constraints.txt, or the bare name
    "$PY" - "$1" <<'PY'
import re, sys
want = re.sub(r"[-_.]+", "-", sys.argv[1]).lower()
for line in open("constraints.txt"):
    m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line)
    if m and re.sub(r"[-_.]+", "-", m.group(1)).lower() == want:
        print(f"{sys.argv[1]}=={m.group(2)}")
        break
else:
    print(sys.argv[1])
PY
}
for name in $PURE $BINARY; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform any -d "$DIR" "$(pinned "$name")"
done
ls "$DIR"
du -sh "$DIR"
