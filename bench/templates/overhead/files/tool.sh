#!/bin/sh
echo bench tool
