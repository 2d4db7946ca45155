"""Forecasters behind one interface: the global LSTM and the classical baselines."""
