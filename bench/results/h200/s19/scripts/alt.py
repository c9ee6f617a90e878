"""Load another tree's _cuda_ext (and its _C build) beside the installed nf4lora, for in-process A/Bs."""
import glob, importlib.util, sys, types
import nf4lora  # noqa: F401  (the installed package: its nf4 module is shared, unchanged between the trees)


def load_alt(tree, tag="alt"):
    so = glob.glob(f"{tree}/python/nf4lora/_C*.so")[0]
    spec = importlib.util.spec_from_file_location(f"{tag}._C", so)
    C = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(C)
    src = open(f"{tree}/python/nf4lora/_cuda_ext.py").read()
    key = 'importlib.import_module("nf4lora._C")'
    assert key in src
    src = src.replace(key, "__ALT_C__")
    name = f"nf4lora._cuda_ext_{tag}"
    mod = types.ModuleType(name)
    mod.__package__ = "nf4lora"
    mod.__file__ = f"{tree}/python/nf4lora/_cuda_ext.py"
    mod.__dict__["__ALT_C__"] = C
    sys.modules[name] = mod
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    assert mod._C is C
    return mod
