// How a loss over many rows or elements is reduced (torch's `reduction` argument).
#pragma once

namespace fastreg {

enum class Reduction { none, mean, sum };

}  // namespace fastreg
