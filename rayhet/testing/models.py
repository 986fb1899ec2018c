"""Test models: the random-weight Llama writers of rayhet.models, under the name tests and benchmarks use.

They live in rayhet.models because the embedded default serves one (production code must not import
rayhet.testing); this module is that same module object, so every name (private ones too) is there.
"""

import sys

from rayhet import models as _models

sys.modules[__name__] = _models
