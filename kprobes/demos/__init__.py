"""Teaching demos: recorded lessons narrated trap by trap (`kpemu demo NAME`).

A demo (a module of kprobes.demos.lessons defining DEMO, a lesson.Demo) is a scenario run
through the public API with a lesson.Recorder attached to the machine's mechanism-event
observers; it names the one question it answers, the learner confusions it resolves, and
claims checked over the recorded steps.  Everything a renderer (render, stepper, the
transcripts) shows comes from that lesson trace; no renderer runs the emulator.

    kprobes.demos.catalogue   DEMOS (name -> Demo, core first) and run(name) -> Lesson
    kprobes.demos.lesson      Recorder, Lesson, Demo, Claim: the trace and its recording
    kprobes.demos.scenes      what the demos share (a booted machine, running to a point)
    kprobes.demos.render      the terminal narration; stepper: the interactive stepper
    kprobes.demos.page        the lesson page (one offline HTML file) and the index of them
    kprobes.demos.slides      one SVG a step and a storyboard of the key frames
"""
