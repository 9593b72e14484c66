"""What every provider emulator shares: a controllable clock and fault-injection rules."""
