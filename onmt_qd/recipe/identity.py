"""One identity per model of a recipe, from the stage that makes it to the report that
judges it: the stages create ``ModelId`` values, file, stage and log names are derived
from them, and the report reads them back from results, never from file names."""
from dataclasses import dataclass

FULL_PRECISION = 32
DEFAULT_FAMILY = "student"  # the students of a profile's ``student`` options
# the methods that make a recipe's models (ModelId.method), in the order tables and the
# plot show them: import these, never write the strings
TEACHER_METHOD = "teacher"
STUDENT_FP = "student_fp"
STUDENT_DISTILLED_FP = "student_distilled_fp"
PM_QUANTIZATION = "pm_quantization"
QUANTIZED_DISTILLATION = "quantized_distillation"
DIFFERENTIABLE_QUANTIZATION = "differentiable_quantization"
QUANTIZED_NORMAL_LOSS = "quantized_normal_loss"
METHODS = (TEACHER_METHOD, STUDENT_FP, STUDENT_DISTILLED_FP, PM_QUANTIZATION,
           QUANTIZED_DISTILLATION, DIFFERENTIABLE_QUANTIZATION, QUANTIZED_NORMAL_LOSS)


@dataclass(frozen=True)
class ModelId:
    """A model: the ``method`` that made it, its width in ``bits`` (32: full precision)
    and its student ``family`` (None for the teacher, which all families share)."""

    method: str
    bits: int = FULL_PRECISION
    family: str | None = DEFAULT_FAMILY

    @property
    def quantized(self):
        return self.bits < FULL_PRECISION

    @property
    def name(self):
        """Stage, file and log name: ``quantized_distillation_4bit``; a family other
        than the default one comes first (``transformer.quantized_distillation_4bit``),
        so existing work folders keep their names."""
        base = f"{self.method}_{self.bits}bit" if self.quantized else self.method
        return base if self.family in (None, DEFAULT_FAMILY) else f"{self.family}.{base}"

    @property
    def label(self):
        """How tables and the plot's legend show it."""
        base = f"{self.method} {self.bits}b" if self.quantized else self.method
        return base if self.family in (None, DEFAULT_FAMILY) else f"{self.family} {base}"

    def as_dict(self):
        return {"family": self.family, "method": self.method, "bits": self.bits}

    @classmethod
    def of(cls, entry):
        """The identity a results entry (``as_dict``'s keys) was made from."""
        return cls(entry["method"], entry["bits"], entry["family"])


TEACHER = ModelId(TEACHER_METHOD, family=None)
