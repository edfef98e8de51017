"""Runtime hooks that make existing runners take their RoPE from pntk's plan."""
