#!/bin/sh
# TEST stand-in for the original script; never run by the corpus tests
exit 0
