#!/bin/sh
# Base environment of the container: nothing to set here.
