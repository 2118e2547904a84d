"""algo-execution: approved orders to the broker (paper or Kite), fills back to the fleet."""
