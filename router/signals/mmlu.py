"""Built-in descriptions and example prompts for the 14 MMLU-Pro subject categories vLLM Semantic
Router's domain classifier reports (``mmlu_categories`` in its domain signals).

fusion-router's domain signal is an embedding nearest-centroid classifier, so a category named here is
the centroid of its description and examples. The texts are ours, written for this router; pure data,
no imports, so the config schema can validate category names without loading a model.
"""

from __future__ import annotations

from typing import NamedTuple


class MMLUCategory(NamedTuple):
    description: str
    examples: tuple[str, ...]


MMLU_CATEGORIES: dict[str, MMLUCategory] = {
    "biology": MMLUCategory(
        "biology and life sciences: cells, genetics, evolution, ecology, anatomy and physiology of living organisms",
        (
            "How does DNA replication work in eukaryotic cells?",
            "Explain the difference between mitosis and meiosis",
            "What role do mitochondria play in cellular respiration?",
            "How does natural selection lead to the evolution of new species?",
            "Describe how enzymes lower the activation energy of a reaction in the body",
            "What is the function of the xylem and phloem in plants?",
            "How do vaccines train the immune system?",
            "What is photosynthesis?",
            "Why do cats and dogs have different numbers of chromosomes?",
            "How do neurons transmit signals?",
        ),
    ),
    "business": MMLUCategory(
        "business and management: strategy, marketing, accounting, operations, entrepreneurship and corporate finance",
        (
            "How should a startup price its first product?",
            "Write a go-to-market plan for a new SaaS tool",
            "What is the difference between gross margin and operating margin?",
            "How do I calculate the break-even point for my small business?",
            "What are good strategies for negotiating with suppliers?",
            "Explain how a company should structure its quarterly sales targets",
            "How do I write a business plan for investors?",
            "What is a good customer retention strategy?",
            "How should I manage a team that misses deadlines?",
            "What are the pros and cons of franchising?",
        ),
    ),
    "chemistry": MMLUCategory(
        "chemistry: chemical reactions, molecules, bonding, stoichiometry, acids and bases, organic and inorganic chemistry",
        (
            "Balance the equation for the combustion of methane",
            "What is the pH of a 0.01 M hydrochloric acid solution?",
            "Explain the difference between ionic and covalent bonds",
            "How many moles are in 36 grams of water?",
            "What happens in an SN2 nucleophilic substitution reaction?",
            "Why do noble gases rarely form compounds?",
            "What is a catalyst?",
            "How does rust form on iron?",
            "What is the molar mass of sodium chloride?",
            "Why is water a polar molecule?",
        ),
    ),
    "computer science": MMLUCategory(
        "computer science and software engineering: algorithms, data structures, programming, operating systems, networks and databases",
        (
            "What is the time complexity of quicksort in the worst case?",
            "Explain how a hash table handles collisions",
            "Write a Python function that reverses a linked list",
            "How does virtual memory work in an operating system?",
            "What is the difference between TCP and UDP?",
            "How do database indexes speed up queries?",
            "How does garbage collection work in Java?",
            "Explain recursion with an example",
            "What is a REST API?",
            "Why is my SQL query slow?",
        ),
    ),
    "economics": MMLUCategory(
        "economics: supply and demand, markets, inflation, monetary and fiscal policy, trade, micro and macroeconomics",
        (
            "How does raising interest rates affect inflation?",
            "Explain the law of supply and demand with an example",
            "What causes a recession?",
            "What is the difference between GDP and GNP?",
            "How do tariffs affect international trade and consumer prices?",
            "What is price elasticity of demand?",
            "Why do governments print money?",
            "What is opportunity cost?",
            "How does unemployment relate to inflation?",
            "What is a monopoly and why is it regulated?",
        ),
    ),
    "engineering": MMLUCategory(
        "engineering: mechanical, electrical, civil and chemical engineering, circuits, structures, materials and control systems",
        (
            "Calculate the current through a 10 ohm resistor connected to a 5 volt source",
            "How do you size a beam to carry a distributed load?",
            "Explain how a PID controller works",
            "What is the efficiency of a Carnot heat engine?",
            "How does a transformer step down voltage?",
            "What factors determine the tensile strength of steel?",
            "How do bridges handle thermal expansion?",
            "What is the difference between AC and DC motors?",
            "How is a gearbox ratio calculated?",
            "What causes metal fatigue in aircraft?",
        ),
    ),
    "health": MMLUCategory(
        "health and medicine: diseases, symptoms, treatments, medications, nutrition, anatomy and clinical care",
        (
            "What are the early symptoms of type 2 diabetes?",
            "How does ibuprofen reduce inflammation?",
            "What is a healthy resting heart rate for adults?",
            "How are bacterial infections treated differently from viral ones?",
            "What foods are good sources of iron?",
            "What are the risk factors for high blood pressure?",
            "How much sleep does a teenager need?",
            "Is it safe to take paracetamol with alcohol?",
            "What are the symptoms of the flu?",
            "How can I lower my cholesterol?",
        ),
    ),
    "history": MMLUCategory(
        "history: past events, civilizations, wars, revolutions, empires, historical figures and periods",
        (
            "What were the main causes of World War I?",
            "Why did the Roman Empire fall?",
            "Describe the significance of the French Revolution",
            "Who was Genghis Khan and what did he conquer?",
            "What happened during the Cold War?",
            "How did the Industrial Revolution change society in the 19th century?",
            "Who built the pyramids of Giza?",
            "What was the Renaissance?",
            "Why did the Berlin Wall fall?",
            "What was the significance of the Magna Carta?",
        ),
    ),
    "law": MMLUCategory(
        "law and legal matters: contracts, courts, rights, statutes, liability, criminal and civil law",
        (
            "Is a verbal agreement a legally binding contract?",
            "What is the difference between a misdemeanor and a felony?",
            "Can my landlord keep my security deposit for normal wear and tear?",
            "What does it mean to be found liable for negligence?",
            "How does copyright protect software?",
            "What are my rights if I am arrested?",
            "Can my employer fire me without notice?",
            "How do I file a small claims case?",
            "What is the statute of limitations for fraud?",
            "Do I need a lawyer to write a will?",
        ),
    ),
    "math": MMLUCategory(
        "mathematics: algebra, calculus, geometry, probability, statistics, number theory and proofs",
        (
            "What is the integral of x squared?",
            "Solve for x: 3x + 7 = 22",
            "Prove that the square root of 2 is irrational",
            "What is the probability of rolling two sixes with two dice?",
            "Find the derivative of sin(x) times e^x",
            "What is the area of a circle with radius 4?",
            "Compute the probability of getting three heads in five coin flips",
            "What is the sum of the first 100 integers?",
            "How do I multiply two matrices?",
            "Is 97 a prime number?",
        ),
    ),
    "other": MMLUCategory(
        "everyday and miscellaneous questions: general knowledge, travel, food, hobbies, writing help and small talk",
        (
            "Plan a weekend trip to Lisbon",
            "What should I cook for dinner tonight?",
            "Write a birthday message for my sister",
            "Recommend a good book for a long flight",
            "How do I get a coffee stain out of a shirt?",
            "Tell me something interesting about autumn",
            "Tell me a joke",
            "What is a good name for my new puppy?",
            "Hi, how are you today?",
            "Suggest a fun game for a rainy afternoon",
            "What should I wear to a summer wedding?",
        ),
    ),
    "philosophy": MMLUCategory(
        "philosophy: ethics, logic, metaphysics, epistemology, free will, meaning and the great philosophers",
        (
            "What is Kant's categorical imperative?",
            "Is it ever morally right to lie?",
            "Explain the trolley problem and what it shows",
            "What did Descartes mean by I think, therefore I am?",
            "Do humans have free will?",
            "What is the difference between utilitarianism and virtue ethics?",
            "What is the meaning of life?",
            "What did Plato mean by the allegory of the cave?",
            "Can a machine ever be conscious?",
            "What is existentialism?",
        ),
    ),
    "physics": MMLUCategory(
        "physics: mechanics, forces, energy, electromagnetism, thermodynamics, quantum mechanics and relativity",
        (
            "What is Newton's second law of motion?",
            "How fast does an object fall after 3 seconds in free fall?",
            "Explain the photoelectric effect",
            "Why does time slow down near the speed of light?",
            "What is the relationship between voltage, current and resistance?",
            "How does entropy relate to the second law of thermodynamics?",
            "Explain quantum entanglement simply",
            "What is the speed of light?",
            "Why do objects float in water?",
            "How does a nuclear reactor produce energy?",
        ),
    ),
    "psychology": MMLUCategory(
        "psychology and mental health: behaviour, cognition, emotions, memory, personality, stress and therapy",
        (
            "Why do people procrastinate?",
            "What is cognitive behavioural therapy?",
            "How does stress affect memory?",
            "What is classical conditioning?",
            "How can I manage anxiety before a presentation?",
            "What are the stages of child development according to Piaget?",
            "Why do we dream?",
            "What is the placebo effect?",
            "How do habits form?",
            "What causes burnout?",
        ),
    ),
}

MMLU_CATEGORY_NAMES: tuple[str, ...] = tuple(MMLU_CATEGORIES)
