import os
import sys

# The runtime package is imported by its own name, as in a function's task root.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "runtime"))
