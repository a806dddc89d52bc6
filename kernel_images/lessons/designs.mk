# The designs demo's target module, kernel_images/lessons/designs_targets.o (committed, so
# nobody needs a compiler to run the demo); `make images` rebuilds it byte for byte.
# Included by the top Makefile; its own rule, apart from the other lessons' targets.
DESIGNS_TARGETS := kernel_images/lessons/designs_targets.o

images: $(DESIGNS_TARGETS)

$(DESIGNS_TARGETS): kernel_images/lessons/designs_targets.S kernel_images/lessons/designs.mk
	gcc -c -Wa,--noexecstack -o $@ $<
