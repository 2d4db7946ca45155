"""Models: forecasters (global LSTM, baselines), scoring and calibration, breach prediction,
training and the model registry. Filled in by the forecasting work; it imports core and ingest."""
