"""Row names PyTorch has taken: a row's name is its module's attribute name (``state_dict`` keys
follow the spec), and ``nn.Module.add_module`` refuses one that is already an attribute.

Listed here, not read from torch, because the spec loader (and so ``validate``, which CI runs)
imports no torch; ``tests/test_names.py`` checks the list against the installed torch, and the
builder keeps its own check against the live module as the backstop for a newer torch.
"""

from __future__ import annotations

# The attributes of an empty ``nn.Sequential`` (torch 2.14) that a row name could spell; every
# dunder (``__class__``, ``__dict__``) is taken too.
_ATTRIBUTES = """
    T_destination _apply _backward_hooks _backward_pre_hooks _buffers _call_impl
    _compiled_call_impl _forward_hooks _forward_hooks_always_called _forward_hooks_with_kwargs
    _forward_pre_hooks _forward_pre_hooks_with_kwargs _get_backward_hooks
    _get_backward_pre_hooks _get_item_by_idx _get_name _is_full_backward_hook
    _load_from_state_dict _load_state_dict_post_hooks _load_state_dict_pre_hooks
    _maybe_warn_non_full_backward_hook _modules _named_members _non_persistent_buffers_set
    _parameters _register_load_state_dict_pre_hook _register_state_dict_hook
    _replicate_for_data_parallel _save_to_state_dict _slow_forward _state_dict_hooks
    _state_dict_pre_hooks _version _wrapped_call_impl add_module append apply bfloat16 buffers
    call_super_init children compile cpu cuda double dump_patches eval extend extra_repr float
    forward get_buffer get_extra_state get_parameter get_submodule half insert ipu
    load_state_dict modules mtia named_buffers named_children named_modules named_parameters
    parameters pop register_backward_hook register_buffer register_forward_hook
    register_forward_pre_hook register_full_backward_hook register_full_backward_pre_hook
    register_load_state_dict_post_hook register_load_state_dict_pre_hook register_module
    register_parameter register_state_dict_post_hook register_state_dict_pre_hook
    requires_grad_ set_extra_state set_submodule share_memory state_dict to to_empty train
    training type xpu zero_grad
"""
TAKEN = frozenset(_ATTRIBUTES.split())


def taken_by_torch(name: str) -> bool:
    """Whether ``name`` is an attribute of ``nn.Module`` (``forward``, ``training``,
    ``__class__``)."""
    return name in TAKEN or (name.startswith("__") and name.endswith("__"))
