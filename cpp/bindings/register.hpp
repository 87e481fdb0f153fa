// One register_<area>() per kernel family; module.cpp calls them all.
#pragma once

#include <pybind11/pybind11.h>

namespace fastreg::bindings {
void register_runtime(pybind11::module_& m);
void register_optim(pybind11::module_& m);
void register_linear(pybind11::module_& m);
void register_epoch(pybind11::module_& m);
void register_loader(pybind11::module_& m);
void register_losses(pybind11::module_& m);
void register_linear_cross_entropy(pybind11::module_& m);
}  // namespace fastreg::bindings
