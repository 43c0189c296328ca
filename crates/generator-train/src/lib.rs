//! Generator fine-tuning on (question + retrieved passages -> answer): SFT, instruction tuning and DPO, full or PEFT.
