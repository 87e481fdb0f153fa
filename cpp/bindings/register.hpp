// One register_<op>() per op (or kernel family); module.cpp calls them all.
#pragma once

#include <pybind11/pybind11.h>

namespace fastreg::bindings {
void register_runtime(pybind11::module_& m);
void register_sgd(pybind11::module_& m);
void register_linear(pybind11::module_& m);
void register_epoch(pybind11::module_& m);
void register_loader(pybind11::module_& m);
void register_cross_entropy(pybind11::module_& m);
void register_softmax(pybind11::module_& m);
void register_regression_loss(pybind11::module_& m);
void register_linear_cross_entropy(pybind11::module_& m);
}  // namespace fastreg::bindings
