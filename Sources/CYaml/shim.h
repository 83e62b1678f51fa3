#ifndef NODEAGENT_CYAML_SHIM_H
#define NODEAGENT_CYAML_SHIM_H
#include <yaml.h>
#endif
