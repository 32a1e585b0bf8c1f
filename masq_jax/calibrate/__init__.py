"""Calibration: the data as device arrays (``batch``), one layer's step (``layer``), the loop over
layers with its two propagation strategies, resume, checkpoints and report (``runner``), the run
directory (``rundir``), the modality loss weights (``loss_weights``) and ``masq eval``'s evaluation
of a written artefact (``evaluate``).

Import the submodules directly (``from masq_jax.calibrate.runner import run_quantize``): this
package imports nothing itself, so importing one piece stays light.
"""
