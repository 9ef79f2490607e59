import sys

# No TF_CPP_MIN_LOG_LEVEL here: `python -m unet_keras` imports the package, and with it
# TensorFlow, before this file runs, and TensorFlow 2.21 prints its start-up lines while it
# loads, before it reads the variable (set it in the shell to quiet its later messages).
from unet_keras.cli import main

sys.exit(main())
