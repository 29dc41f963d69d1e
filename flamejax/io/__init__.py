"""placeholder"""
def load_flame(*a, **k): raise NotImplementedError
