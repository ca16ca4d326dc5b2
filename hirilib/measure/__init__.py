"""Measuring a model: ``flops`` (parameters, multiply-accumulates counted as the papers
count them, activations), ``timing`` (latency, throughput, peak memory), ``memory``
(training memory, measured on any device), ``roofline`` (device peaks and achieved
rates) and ``results`` (the results-file format that chapters plot from)."""

from .flops import (EXTRA_FLOP_HANDLES, UncountedOpError, ZERO_COST_OPS, blank_model,
                    bn_flop_handle, count_activations, count_flops, count_params, flop_analysis,
                    flops_by_module, flops_by_stage)
from .memory import max_batch_estimate, saved_activation_bytes, training_memory
from .results import (ResultsError, describe, environment, find_results, load_results,
                      save_results)
from .timing import device_name, measure_latency, measure_memory, measure_throughput

__all__ = [
    "count_params", "count_flops", "flop_analysis", "flops_by_module", "flops_by_stage", "blank_model",
    "bn_flop_handle", "count_activations", "training_memory", "saved_activation_bytes",
    "max_batch_estimate", "UncountedOpError", "ZERO_COST_OPS", "EXTRA_FLOP_HANDLES",
    "measure_latency", "measure_throughput", "measure_memory", "device_name",
    "save_results", "load_results", "describe", "environment", "find_results", "ResultsError",
]
